"""Models — placeholder page; dashboard B's page replaces this file."""

import streamlit as st

import components

components.page_setup("Models", action="view")
st.info("This page is not available yet.")
