"""napari plugin for calcimeasure (placeholder).

The plugin will be a thin shell over the calcimeasure API: a reader that
returns the radiograph with its spacing as layer scale, and widgets to run
segmentation, correct labels by hand and export measurements. Its own issue
fills it; until then this package only declares the npe2 manifest.
"""

__version__ = "0.0.1"
