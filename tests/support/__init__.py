"""Test support: servers, processes and fakes the tests talk to for real."""
