"""The ``vallum`` command line: the one place that wires proxy and operator together."""
