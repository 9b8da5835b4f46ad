"""``python -m harness.cli`` = ``tbench``."""
from harness.cli import main

main()
