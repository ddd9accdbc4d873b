"""lcgen: learned representations, reconstructions and gap-fills of stellar light curves."""

import os

__version__ = "0.1.0"

# Tensors of 2 MB or more in transparent huge pages (torch's own switch, read at its first
# allocation, so it only acts when lcgen is imported before torch, as the CLI does). A training
# step allocates and frees the same large activations every step, and each fresh block faults in
# page by page: with 4 KB pages a new 33 MB tensor cost 32 ms of CPU against 9 ms with huge pages
# (a copy into memory already mapped: 6 ms) on the 2-core test machine. Set it to 0 to turn off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
