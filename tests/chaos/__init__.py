"""The fault suite (issue 8, item 5): real processes, a real Redis behind a
fault proxy, faults injected in turn; see scenario.py. ``make test`` runs one
round (test_faults.py); ``make chaos`` runs more and writes the figures."""
