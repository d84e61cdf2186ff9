from ssc_skin.cohort.privacy import pseudonym


def test_pseudonym_is_stable_keyed_and_hides_the_id():
    a = pseudonym("Smith-1987-001", "key")
    assert a == pseudonym("Smith-1987-001", "key")
    assert a != pseudonym("Smith-1987-001", "other-key")
    assert a != pseudonym("Smith-1987-002", "key")
    assert "Smith" not in a and "001" not in a
