"""edgekd: distil a large audio teacher into a tiny INT8 keyword-spotting model, with parity proof."""

__version__ = "0.2.0"
