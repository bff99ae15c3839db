"""What a run reports: ``summary`` (the lines ``qpass optimize`` prints), ``data`` (the ``--report`` JSON: per
quantiser formats, ranges, saturation, SQNR, histograms), ``html`` and ``svg`` (the self-contained HTML page)."""
