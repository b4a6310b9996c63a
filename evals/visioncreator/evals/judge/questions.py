"""Checklist items as yes/no questions a judge answers about one image."""

from __future__ import annotations

from visioncreator.tool_servers.synthetic import CheckItem

__all__ = ["checklist_question"]


def checklist_question(item: CheckItem) -> str:
    """A checklist item as a yes/no question about one image."""
    subject = item.subject or "the main subject"
    if item.check == "object":
        return f"Is there at least one {subject}?"
    if item.check == "count":
        return f"Are there exactly {item.value} {subject} (count every {subject})?"
    if item.check == "color":
        return f"Is every {subject} {item.value}?"
    if item.check == "position":
        return f"Is a {subject} {(item.relation or 'next_to').replace('_', ' ')} a {item.other}?"
    if item.check == "text":
        return f'Does the image show the text "{item.value}", spelled exactly?'
    if item.check == "style":
        return f"Is the image in {str(item.value).replace('_', ' ')} style?"
    if item.check == "absent":
        return f"Is there no {subject} at all?"
    if item.check == "preserved":
        return f"Apart from what the instruction changes, is input image {item.reference} kept as it was?"
    return f"Is the {subject} the same individual as in output image {item.reference}?"
