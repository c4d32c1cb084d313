"""Binary byte units: one definition for every module that sizes a buffer or a message."""

KIB = 2**10
MIB = 2**20
GIB = 2**30
TIB = 2**40
