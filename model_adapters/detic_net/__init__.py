"""Pure-PyTorch port of Detic / CoDet (detectron2-free, inference only); see model.py."""
