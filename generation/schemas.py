"""What a provider must return for each content type; structured output is
validated against these (DESIGN §6)."""

from typing import Literal

from pydantic import BaseModel, Field, HttpUrl, model_validator


class TutorialDraft(BaseModel):
    title: str = Field(min_length=1, max_length=300)
    summary: str = Field(min_length=1, max_length=2000)
    markdown: str = Field(min_length=1)


class Resource(BaseModel):
    title: str = Field(min_length=1, max_length=300)
    url: HttpUrl
    type: Literal["article", "video", "documentation", "course", "book", "exercise", "other"]
    description: str = Field(max_length=1000)
    estimated_minutes: int = Field(ge=1, le=10_000)


class ResourceList(BaseModel):
    items: list[Resource] = Field(min_length=1, max_length=30)


class Question(BaseModel):
    question_id: str = Field(min_length=1, max_length=64)
    type: Literal["single_choice", "multiple_choice", "true_false"]
    question: str = Field(min_length=1, max_length=2000)
    options: list[str] = Field(min_length=2, max_length=8)
    correct_answers: list[int] = Field(min_length=1)
    explanation: str = Field(max_length=2000)
    difficulty: Literal["easy", "medium", "hard"]

    @model_validator(mode="after")
    def answers_point_at_options(self) -> "Question":
        if any(not 0 <= index < len(self.options) for index in self.correct_answers):
            raise ValueError("correct_answers must be indexes into options")
        if self.type != "multiple_choice" and len(self.correct_answers) != 1:
            raise ValueError(f"{self.type} questions have exactly one correct answer")
        return self


class Quiz(BaseModel):
    questions: list[Question] = Field(min_length=1, max_length=30)
