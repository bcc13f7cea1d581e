"""`python -m bench [--quick]`: the streaming benchmarks (see bench/README.md)."""

from bench.run import main

main()
