"""changescout: find the changes worth looking at in satellite image time series."""

__version__ = "0.3.30"
