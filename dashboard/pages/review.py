"""Review & labels — placeholder page; dashboard B's page replaces this file."""

import streamlit as st

import components

components.page_setup("Review & labels", action="label")
st.info("This page is not available yet.")
