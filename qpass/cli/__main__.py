"""``python -m qpass.cli``."""
from qpass.cli import main

main()
