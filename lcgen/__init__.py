"""lcgen: learned representations, reconstructions and gap-fills of stellar light curves."""

import os

__version__ = "0.1.0"

# Tensors of 2 MB or more in transparent huge pages (torch's own switch, read once, at the
# process's first tensor, so it only acts when set before that: lcgen sets it on import, and the
# CLI imports lcgen before anything else). A fresh block faults in page by page: with 4 KB pages a new 33 MB
# tensor cost 32 ms of CPU against 9 ms with huge pages (a copy into memory already mapped: 6 ms)
# on the 2-core test machine. Training then chooses per model (ModelSpec.huge_pages, through
# lcgen.workers.choose_huge_pages), unless the user set THP_MEM_ALLOC_ENABLE: 0 turns them off, 1 on.
THP_SET_BY_USER = "THP_MEM_ALLOC_ENABLE" in os.environ
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
