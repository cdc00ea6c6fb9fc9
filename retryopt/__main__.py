"""`python -m retryopt` runs the command line."""

from retryopt.cli import main

main()
