"""Segmentation losses: residual moment loss and rival location-aware losses."""

from rmseg.losses.compound import MA2020_BASE, SegmentationLoss
from rmseg.losses.residual_moment import ResidualMomentLoss
from rmseg.losses.adaptive_region import AdaptiveRegionLoss
from rmseg.losses.boundary import BoundaryLoss
from rmseg.losses.hausdorff import HausdorffDistanceLoss
from rmseg.losses.region_wise import RegionWiseLoss
from rmseg.losses.schedules import RebalanceSchedule
from rmseg.losses.sdf import SignedDistanceLoss
