"""lcgen: learned representations, reconstructions and gap-fills of stellar light curves."""

__version__ = "0.1.0"
