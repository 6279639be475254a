"""The command line (layer L5, outermost): ``mailmoat …``. Nothing imports it."""
