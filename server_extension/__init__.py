"""nbguard's jupyter-server extension (user zone): mediation and the execute witness.

It only carries requests to the guard service; it never decides governed access.
"""
