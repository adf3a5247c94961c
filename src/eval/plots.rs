//! Plots with plotters: SVG always, PNG when a TrueType font is found at run time.
//!
//! IMPLEMENTATION IN PROGRESS (helper).
