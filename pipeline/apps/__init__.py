"""What the commands do, as library calls: run (remove_background, iter_mattes), cam (live), edit (the
browser correction brush) and farm (Ray)."""
