"""The plugin's dock widget: generate cells from a shape model, fit the model to a Labels layer.

Generation gives the cell that ``cellinr generate`` writes for the same model, seed, size, frames and
sampler (:func:`cellinr.generation.frontends.sample_cell`). Fitting prepares the selected Labels layer
into a temporary data set (cubes of the widget's size) and runs :func:`cellinr.training.fitting.fit` (network frozen); each cell's
fitted shape is added as a Labels layer over it, named with its Dice. Both run in the GUI thread:
keep sizes small (the default 64^3 takes seconds on a CPU).

The module imports without napari: ``CellinrWidget`` (a magicgui ``Container``, so it needs
magicgui and napari to be defined) is built on first access, and without them that access raises
one ImportError naming the extra to install.
"""


from cellinr.generation.samplers import LATENT_SAMPLERS, ROTATION_MODES
from cellinr.model.registry import bundled_shape_models
from cellinr.napari._layers import SAMPLE_SIZE, fit_labels, generated_layer

RUN_FOLDER_CHOICE = "run folder..."
#: The sampler choice that leaves it to the model (generate's default).
RECOMMENDED = "recommended"




def _build_widget_class():
    try:
        import napari
        from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, SpinBox
    except ImportError as exc:
        raise ImportError(f"cellinr's napari widget needs {exc.name}: pip install 'cellinr[napari]'") from None

    class CellinrWidget(Container):
        """Generate new cells and fit a model to labels, in a napari viewer."""

        def __init__(self, napari_viewer: napari.viewer.Viewer):
            self.viewer = napari_viewer
            self.model = ComboBox(label="model", choices=[*bundled_shape_models(), RUN_FOLDER_CHOICE])
            self.run_dir = FileEdit(label="run folder", mode="d", visible=False)
            self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
            self.size = SpinBox(label="size (voxels)", value=SAMPLE_SIZE, min=16, max=512)
            self.frames = SpinBox(label="frames (0: as trained)", value=0, min=0, max=10000)
            self.sampler = ComboBox(label="sampler", choices=[RECOMMENDED, *LATENT_SAMPLERS], value=RECOMMENDED)
            self.rotation = ComboBox(label="rotation", choices=ROTATION_MODES, value="random")
            self.generate_button = PushButton(text="Generate")
            self.labels_layer = ComboBox(label="labels to fit", choices=self._labels_choices)
            self.steps = SpinBox(label="fit steps", value=100, min=1, max=100000)
            self.fit_button = PushButton(text="Fit")
            self.status = Label(value="")
            super().__init__(widgets=[self.model, self.run_dir, self.seed, self.size, self.frames, self.sampler,
                                      self.rotation, self.generate_button, self.labels_layer, self.steps,
                                      self.fit_button, self.status])
            self.model.changed.connect(lambda value: setattr(self.run_dir, "visible", value == RUN_FOLDER_CHOICE))
            self.generate_button.changed.connect(self.generate)
            self.fit_button.changed.connect(self.fit)
            for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
                event.connect(lambda _event: self.labels_layer.reset_choices())

        def _labels_choices(self, _widget=None) -> list:
            return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, napari.layers.Labels)]

        def selected_model(self) -> str:
            """A bundled model name or the chosen run folder."""
            if self.model.value == RUN_FOLDER_CHOICE:
                return str(self.run_dir.value)
            return str(self.model.value)

        def generate(self, *_args) -> napari.layers.Labels:
            """Add a new cell of the selected model as a Labels layer (and return it)."""
            data, meta, _ = generated_layer(self.selected_model(), seed=int(self.seed.value), size=int(self.size.value),
                                            frames=int(self.frames.value) or None,
                                            latent=None if self.sampler.value == RECOMMENDED else str(self.sampler.value),
                                            rotation=str(self.rotation.value))
            layer = self.viewer.add_labels(data, **meta)
            self.status.value = f"generated {meta['name']}: {data.shape[0]} frames of {data.shape[1]}^3"
            return layer

        def fit(self, *_args) -> list:
            """Fit the selected model to the chosen Labels layer; add the fitted shapes; return fit's results."""
            from cellinr.errors import ParameterError

            layer = self.labels_layer.value
            if layer is None:
                raise ParameterError("choose a Labels layer to fit")
            layers, results = fit_labels(self.selected_model(), layer.data, scale=tuple(layer.scale),
                                         steps=int(self.steps.value), seed=int(self.seed.value), size=int(self.size.value))
            for data, meta, _ in layers:
                self.viewer.add_labels(data, **meta)
            mean = sum(r["dice"] for r in results) / len(results)
            self.status.value = f"fitted {len(results)} cells of {layer.name}: mean Dice {mean:.3f}"
            return results

    return CellinrWidget


def __getattr__(name: str):
    if name == "CellinrWidget":
        cls = _build_widget_class()
        globals()["CellinrWidget"] = cls  # built once
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
