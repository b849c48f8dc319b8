"""The file index: what each backup holds and where, readable without thawing a volume.

``records`` is the stored format (a backup's send stream without its data), written while
the stream passes; ``entries`` is what replaying a chain's records says a day held, which
``find``, ``diff`` and ``restore --path`` read.
"""
