"""Capacity planning: model cost, device roofline, queueing simulation of the batch policy."""
