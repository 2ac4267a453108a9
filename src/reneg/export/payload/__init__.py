"""Source files that ``reneg export`` copies verbatim into a host's folder (an InvokeAI node, an A1111 script).

They run inside the host, import the host's modules and never reneg: reneg itself does not import them.
"""
