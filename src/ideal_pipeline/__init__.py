"""ideal_pipeline: IDEAL (ICLR 2023), query-efficient data-free learning from label-only black boxes."""

__version__ = "0.1.0"
