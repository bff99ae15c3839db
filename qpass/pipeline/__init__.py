"""The pass machinery: the pass protocol (``pass_base``), typed analyses and their manager (``analyses``), what a
run shares (``context``: inputs, analyses, report), the pass manager (``manager``), pipeline files (``files``,
``registry``), ``QuantConfig`` (``config``) and ``run_passes`` for library code (``run``)."""
