"""Defences at the edges: which URLs we fetch, which file names we write."""
