"""Catalogue importers: NUDS XML (``nuds``) and CSV (``tabular``), sharing ``base``.

They read source records and write through ``collection.services``, one transaction per record.
"""
