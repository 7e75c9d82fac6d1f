"""The composition root (``container``) and the command line (``cli``): the only place adapters meet."""
