"""Each paper's pipeline end to end on the fast ops. Empty until a family pipeline lands."""
