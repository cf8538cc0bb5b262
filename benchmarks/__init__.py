"""regzoo's performance benchmarks (not tests): each module runs with
`python -m benchmarks.<name>` and exposes a function returning its figures."""
