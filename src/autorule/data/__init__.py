"""Preference data: pairs, the files and layouts they come in, and chat messages.

Modules: `pairs` (PreferencePair, errors, read options), `readers` (rows of files and
datasets), `formats` (row parsers of the plain formats), `layouts` (named public layouts,
two answers and a label, ranked lists; format detection), `labels` (what a label's values
mean), `column_kinds` (what a column holds, from its values), `hints` (the message when no
format fits), `stream` (`stream_pairs`, `load_pairs`), `messages` (the one normaliser of
message content), `reasoning` (a completion's reasoning block cut from its answer).
"""

from autorule.data.formats import FORMATS
from autorule.data.hints import detect_format
from autorule.data.messages import Message, to_conversation
from autorule.data.pairs import BadRow, Columns, DataError, LoadResult, NotPreferenceData, PreferencePair, SkipRow, pair_id
from autorule.data.readers import first_record, iter_rows
from autorule.data.stream import PairStream, chunked, load_pairs, stream_pairs

__all__ = ["FORMATS", "BadRow", "Columns", "DataError", "LoadResult", "Message", "NotPreferenceData", "PairStream",
           "PreferencePair", "SkipRow", "chunked", "detect_format", "first_record", "iter_rows", "load_pairs", "pair_id",
           "stream_pairs", "to_conversation"]
