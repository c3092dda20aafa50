"""``python -m em2fm.simulate``: print every simulator parameter (key, default, bounds, unit)."""

from .params import main

main()
