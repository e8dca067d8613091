"""Measured ring attention with torch.distributed (optional extra ``ringsim[torch]``)."""
