"""Cluster tests: several relay nodes behind the shipped balancer configs."""
