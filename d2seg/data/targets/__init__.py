"""Target generators the dataset mapper runs: pure functions from an image's annotations to the
ground truth a head trains on.

Where training targets live: targets the dataset mapper computes from the annotations sit here;
targets the model computes at training time from its own proposals (MaskIoU, ParsingIoU, each
RoI's part-map crop) sit beside their heads in :mod:`d2seg.modeling.roi_heads`.
"""
