"""The ``swallow-trt`` command line: thin commands that parse, build a spec and call the library."""
