"""Studies: plan an iso-FLOP family, sweep it, store its results."""
