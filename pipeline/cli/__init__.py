"""The `bgvid` command line: one module per command, a thin layer over bgvid.apps."""
