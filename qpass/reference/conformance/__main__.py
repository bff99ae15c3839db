"""``python -m qpass.reference.conformance [--write FILE.md]``"""
from .report import main

raise SystemExit(main())
