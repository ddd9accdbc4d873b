"""Features: what is computed from light curves before a model sees them.

- :mod:`lcgen.features.multitaper`: the multitaper method (DPSS tapers, adaptive PSD, F-tests,
  mtNUFFT, the ACF) on irregular samples.
- :mod:`lcgen.features.preprocess`: ``lcgen preprocess``, per-curve PSD, ACF and F-statistic on one
  shared grid (the ``spectra`` file).
- :mod:`lcgen.features.convert`: ``lcgen convert``, fixed-length normalised windows (the
  ``timeseries`` file).
- :mod:`lcgen.features.window_spectra`: ``convert --spectra``, each window's own spectra on shared
  grids (the paired file of the multimodal model).

Nothing is imported here, so a worker that needs one module does not pay for the others.
"""
