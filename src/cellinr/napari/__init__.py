"""The napari plugin of cellinr (``pip install "cellinr[napari]"``; manifest ``napari.yaml``).

- reader (:func:`cellinr.napari._reader.napari_get_reader`): generated folders and sequences,
  benchmarks, run folders (a quick reconstruction), prepared data sets, meshes;
- sample data (:mod:`cellinr.napari._sample_data`): a new cell from each bundled shape model;
- widget (:class:`cellinr.napari._widget.CellinrWidget`): generate cells from a model, fit a Labels layer.

The layer data come from :mod:`cellinr.napari._layers`, which does not import napari.
"""
