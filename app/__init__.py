"""Stave's Qt front end: a thin skin over ``core``."""
