"""Know your data before trusting a probe (issue 15): what the images and their labels say besides taxonomy.

Modules (each a part of ``latent audit``):

* :mod:`latent.audit.images`: image properties read from the files (format, size, aspect, what the model's
  preprocessing cuts away, greyscale, tiny, blurred, exposure, unreadable) and exact duplicates by content.
* :mod:`latent.audit.duplicates`: near duplicates by embedding cosine without an n^2 matrix, and whether a
  pair crosses a split or two species; overlap with a model's training taxa.
* :mod:`latent.audit.metadata`: how much of the embedding geometry a metadata column explains next to the
  taxonomy (PERMANOVA-style R^2 with permutations that respect the taxonomy).
"""
