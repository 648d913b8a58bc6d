"""The paper's experiments (Tables 3-5, Figures 2-3, significance, breakdown) over the trainer."""
