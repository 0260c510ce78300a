"""The collection on the web of museum data: IIIF, NUDS, Nomisma RDF and Linked Art out.

Each module turns catalogue rows into one of the ecosystem's formats, with its own library where
one is maintained (``iiif-prezi3`` for IIIF manifests, ``rdflib`` for RDF); ``views`` serves them
and the management commands ``export_nuds`` / ``export_rdf`` write them to files. Only public
specimens and published items go out, and never the private fields (findspot, provenance).
"""
