"""Alerts & audit — placeholder page; dashboard B's page replaces this file."""

import streamlit as st

import components

components.page_setup("Alerts & audit", action="view")
st.info("This page is not available yet.")
