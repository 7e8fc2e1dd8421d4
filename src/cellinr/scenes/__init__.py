"""Populations of generated cells in one field of view: placement without overlap, motion, divisions,
streaming composition, CTC export, dataset-quality measures, calibration against real data and a
classical baseline that measures how hard a scene is.

Modules, in the order data flows: :mod:`placement` (bodies in an extended, periodic field; no overlap),
:mod:`motion` (drift and random walk), :mod:`lineage` (components of a cell's own masks, divisions,
CTC track bookkeeping), :mod:`composer` (the frame-by-frame scene), :mod:`export` (files, resumable),
:mod:`quality` (CTC-style measures of any CTC folder), :mod:`calibration` (``like=``),
:mod:`difficulty` (threshold + watershed + LAP tracking, scored with CTC metrics).
"""
