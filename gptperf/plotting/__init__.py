"""Pictures (matplotlib, Agg, imported lazily): the roofline, measured ceilings, profiles, training curves."""
