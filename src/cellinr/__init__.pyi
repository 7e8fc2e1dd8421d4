"""Typing stub of the public API (the package imports these lazily, see __init__.py)."""

__version__: str
__all__: list[str]

from cellinr.benchmarking import benchmark as benchmark
from cellinr.data.preparation import prepare as prepare
from cellinr.data.simulation import simulate as simulate
from cellinr.data.simulation import simulate_sequence as simulate_sequence
from cellinr.demonstration import demo as demo
from cellinr.evaluation.activations import compare_activations as compare_activations
from cellinr.evaluation.rotations import rotation_report as rotation_report
from cellinr.generation.frames import decode as decode
from cellinr.generation.frontends import generate as generate
from cellinr.generation.frontends import interpolate as interpolate
from cellinr.generation.frontends import reconstruct as reconstruct
from cellinr.generation.frontends import sample_cell as sample_cell
from cellinr.io.sources import open_source as open_source
from cellinr.measurement.comparison import compare as compare
from cellinr.measurement.overlap import compare_masks as compare_masks
from cellinr.measurement.tables import measure as measure
from cellinr.model.reference import import_reference as import_reference
from cellinr.model.run import apply_fit as apply_fit
from cellinr.model.run import load_run as load_run
from cellinr.scenes.difficulty import scene_difficulty as scene_difficulty
from cellinr.scenes.frontend import scene as scene
from cellinr.scenes.quality import dataset_quality as dataset_quality
from cellinr.summary import describe as describe
from cellinr.texture.apply import apply_texture as apply_texture
from cellinr.texture.apply import load_texture_model as load_texture_model
from cellinr.texture.renderer import estimate_render_params as estimate_render_params
from cellinr.texture.renderer import render as render
from cellinr.texture.renderer import render_masks as render_masks
from cellinr.training.fitting import fit as fit
from cellinr.training.shape import train as train
from cellinr.training.texture import train_texture as train_texture
