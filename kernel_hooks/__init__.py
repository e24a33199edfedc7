"""nbguard's IPython extension (user zone): cell capture and the ``nbguard://`` client.

Kernel hooks are a witness the user can disable; the server extension is the second.
"""
