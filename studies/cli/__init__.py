"""The `regzoo` command line: parse, decide the process's role once, run, map errors to exits."""
