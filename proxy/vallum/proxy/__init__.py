"""Vallum's proxy: the network shell that serves from an immutable route table."""
